"""ai-manager: supervises the services beside it and updates them."""
