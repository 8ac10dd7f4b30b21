"""aictl package."""
