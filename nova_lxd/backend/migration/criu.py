"""Whether live migration (CRIU checkpoint/restore) can work on this host, and why not."""
import functools
import shutil
import subprocess


@functools.lru_cache(maxsize=1)
def unavailable_reason():
    """None when `criu check` passes, else a sentence saying why live migration cannot work."""
    criu = shutil.which('criu')
    if criu is None:
        return 'CRIU is not installed on this host'
    try:
        out = subprocess.run([criu, 'check'], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return '`criu check` could not run: %s' % exc
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        return '`criu check` fails on this host%s' % (': ' + detail[-1][:200] if detail else '')
    return None
