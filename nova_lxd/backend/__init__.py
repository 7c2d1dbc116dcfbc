"""The bundled LXD-API daemon. It never imports nova: the LXD REST API is the only seam."""
