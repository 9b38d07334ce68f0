"""Training: the loop every trainer runs on (loop.py), the resumable run state it keeps (run.py) and
world-model training (world_model.py); the tokenizer's trainer, genie2.tokenizer.train, runs on the same loop."""
