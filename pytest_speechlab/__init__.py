"""pytest-speechlab."""
