"""Start the tlgui web app: `python app.py [--port N]`.

Listens on 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT or --port say otherwise.
"""

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description="tlgui web app")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 7860)")
    args = parser.parse_args()
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))

    from tlgui.ui.app import launch  # heavy imports only once the arguments are fine

    launch(host=host, port=port)


if __name__ == "__main__":
    main()
