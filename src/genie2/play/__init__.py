"""Players: step inside a learned world, in the browser (server.py + static/) or the terminal."""
