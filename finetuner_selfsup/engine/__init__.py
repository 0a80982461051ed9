"""The training engine behind ``ft.fit``: one loop for self-supervised, class and session data."""
