"""The page's sentences about the server's own limits: refused pictures, time limits, removed runs."""

SAFETY_TEXT: dict[str, str] = {
    "picture_too_big": "that file is too large for a picture: try a smaller one",
    "picture_unreadable": "that file could not be read as a picture: try a JPEG or PNG",
    "picture_refused": "that picture was refused: {reason}",
    "time_limit_reached": "this server stops every run after {time}; the best epoch so far was kept",
    "run_removed": "{label} was removed on {when}: {reason}",
    "removed_age": "it was older than {hours:g} h, the longest this server keeps a run",
    "removed_space": "the runs of this server took more than {gb:g} GB, and the oldest ones make room",
}
