"""World models: the protocol, the simulation oracle (a test instrument), and (later) the diffusers Wan backend."""
