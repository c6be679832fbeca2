"""Serves ``function_app.app`` locally without Azure Functions Core Tools."""
