"""Views of the app: thin functions/Viewers of an AppState."""
