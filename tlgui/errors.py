"""The one exception type whose message is shown to a person as it stands."""


class TlguiError(Exception):
    """A problem the user can fix: the message is one line that says what is wrong and what to do.

    The CLI prints it and exits with status 2; the app shows it in the page. Anything else that
    escapes is a bug.
    """
