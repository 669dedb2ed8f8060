from mmengine.logging import print_log

_seen = set()


def log_once(msg: str, level: str = 'INFO'):
    """Logs ``msg`` through mmengine's current logger, once per process."""
    if msg in _seen:
        return
    _seen.add(msg)
    import logging
    print_log(msg, logger='current', level=getattr(logging, level))
