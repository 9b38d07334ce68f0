"""Players: step inside a learned world (the terminal player; the browser player comes next)."""
