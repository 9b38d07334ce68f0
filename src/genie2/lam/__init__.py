"""Latent actions learned from frames alone (issue 20): the model (`model`), its training (`train`), how
its actions agree with true ones (`agreement`) and its verbs (`cli`)."""
