"""``charrnn serve``: the HTTP server (server.py) and the page it serves (page.html)."""
