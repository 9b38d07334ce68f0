"""World-model training (world_model.py) and the resumable run state every trainer shares (run.py)."""
