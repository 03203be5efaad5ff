"""tlgui: transfer learning for image and text classifiers, from the browser or the command line."""

__version__ = "0.1.0"
