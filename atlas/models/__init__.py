"""Single-device PyTorch model code: VGGT, language encoder, geometry, fusion, action head,
and the policy that joins them (policy.py, the contract the rest of AtlasVLA depends on)."""
