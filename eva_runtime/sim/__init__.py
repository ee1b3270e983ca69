"""MuJoCo bimanual simulation: scenes, physics, scripted experts, success checks, demonstrations."""
