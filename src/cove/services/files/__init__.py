"""Files of a sandbox, seen from the host through its confined root (see rooted.py)."""

from cove.services.files.core import MAX_INLINE_READ, Entry, SandboxFiles
from cove.services.files.rooted import FileExists, NoSpace, normalize

__all__ = ["MAX_INLINE_READ", "Entry", "FileExists", "NoSpace", "SandboxFiles", "normalize"]
