"""Players: step inside a learned world, in the browser (app.py, protocol.py and static/) or the terminal."""
