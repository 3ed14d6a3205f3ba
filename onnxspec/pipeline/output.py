"""Atomic output: an export is built in a temporary folder and swapped into place whole.

The temporary folder sits beside the destination and is named
``.<name>.onnxspec-tmp-<pid>-<random>``; the previous output, while it is swapped, becomes
``.<name>.onnxspec-old-<pid>-<random>``. The PID lets a later run tell a dead run's leftovers
from a live one's: :func:`recover_stale` removes a killed run's temporary folder and puts back
a previous output caught between the two renames of :func:`move_into_place`. A failed
validation keeps its files in ``<output_dir>.onnxspec-failed`` (:func:`keep_failed`).

Every function here works on paths only (no torch, no specs); the pipeline calls them around
and inside its stages, and ``tests/reliability/test_faults.py`` exercises them through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil

from onnxspec.errors import NO_SPACE, OutputDirError

__all__ = [
    "NO_SPACE",
    "NOT_WRITABLE",
    "check_output_dir",
    "keep_failed",
    "make_workdir",
    "move_into_place",
    "recover_stale",
    "remove_created",
]

"""``OSError`` numbers meaning the disk (or the user's quota) is full."""

NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT)
"""``OSError`` numbers meaning a folder cannot be written there."""

_TEMP = re.compile(r"^\.(?P<name>.+)\.onnxspec-(?P<what>tmp|old)-(?P<pid>\d+)-")


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty folder without ``overwrite``.

    Whether the folder is writable is found out by really creating the temporary folder
    (:func:`make_workdir`): ``os.access`` answers "yes" to root even where writing fails.
    """
    if os.path.isfile(output_dir):
        raise OutputDirError(f"output path {output_dir!r} is a file; give a folder path (it will be created)")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise OutputDirError(
            f"output folder {output_dir!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it, "
            "or choose another folder"
        )
    probe = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise OutputDirError(f"cannot create {output_dir!r}: {probe!r} is a file, not a folder; choose another output folder")


def _temp_prefix(target: str, what: str) -> str:
    """Name prefix of this process's temporary folders beside ``target`` (``tmp``: the export
    being built; ``old``: the previous folder while it is swapped). The PID lets a later run
    tell a dead run's leftovers from a live one's."""
    return f".{os.path.basename(target)}.onnxspec-{what}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(target: str) -> list[str]:
    """Clean up after earlier runs on ``target`` that were killed; return what was done.

    A dead run's ``tmp`` folder is removed. A dead run's ``old`` folder is the user's previous
    output, moved aside at the last step: it is put back when ``target`` is missing (the run
    died between the two renames), else removed (the new output was already in place). Folders
    of live processes are left alone.
    """
    parent, name = os.path.dirname(target), os.path.basename(target)
    actions: list[str] = []
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return actions
    for entry in entries:
        m = _TEMP.match(entry)
        if m is None or m["name"] != name or _alive(int(m["pid"])):
            continue
        path = os.path.join(parent, entry)
        try:
            if m["what"] == "old" and not os.path.exists(target):
                os.replace(path, target)
                actions.append(f"restored {target!r} from {entry!r}")
            else:
                shutil.rmtree(path)
                actions.append(f"removed {entry!r}")
        except OSError:  # best effort: a folder we cannot clean stays, clearly named
            continue
    return actions


def make_workdir(output_dir: str) -> tuple[str, list[str]]:
    """Create the temporary folder beside ``output_dir`` (and any missing parents).

    Returns the folder and the parents created (removed again if the export fails). A folder
    that cannot be written raises :class:`OutputDirError`.
    """
    target = os.path.abspath(output_dir)
    parent = os.path.dirname(target)
    created: list[str] = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        workdir = _unique_dir(parent, _temp_prefix(target, "tmp"))
    except OSError as e:
        remove_created(created)
        if e.errno in NOT_WRITABLE:
            raise OutputDirError(
                f"cannot write the output folder {output_dir!r}: {e.strerror} ({probe!r} is not writable); "
                "choose another output folder or fix its permissions"
            ) from e
        raise OutputDirError(f"cannot create a temporary folder beside {output_dir!r}: {e}") from e
    return workdir, created


def _unique_dir(parent: str, prefix: str) -> str:
    """Create a new folder ``<parent>/<prefix><random>`` with the user's umask (mkdtemp would
    make it 0700, and it becomes the output folder)."""
    for _ in range(100):
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary folder name", os.path.join(parent, prefix))


def remove_created(created: list[str]) -> None:
    """Remove parent folders an export created, deepest first, if they are still empty."""
    for path in created:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def keep_failed(workdir: str, output_dir: str) -> str:
    """Move a failed export's files to ``<output_dir>.onnxspec-failed`` for inspection."""
    failed = os.path.abspath(output_dir).rstrip(os.sep) + ".onnxspec-failed"
    if os.path.isdir(failed):
        shutil.rmtree(failed)
    os.replace(workdir, failed)
    return failed


def move_into_place(workdir: str, output_dir: str) -> None:
    """Swap the finished folder in; an old folder is moved aside first and removed last.

    If the process dies between the two renames, the next run on the same target puts the old
    folder back before anything else (:func:`recover_stale`)."""
    target = os.path.abspath(output_dir)
    backup = ""
    if os.path.exists(target):
        backup = _unique_dir(os.path.dirname(target), _temp_prefix(target, "old"))
        os.rmdir(backup)
        os.replace(target, backup)
    try:
        os.replace(workdir, target)
    except OSError:
        if backup:
            os.replace(backup, target)
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
