"""Inverse dynamics model: frames -> joint commands. Training (torch) and the ONNX decoder used at deployment."""
