"""The web app over the engine: `python app.py`, or `from tlgui.ui.app import launch`."""
