"""How deeply a pickle nests, measured from its opcodes without building anything.

Why: CPython hashes a tuple recursively in C, and both unpicklers (torch's weights-only one and
the index loader) hash a tuple as soon as it becomes a dict key. A tuple nested some 300,000
deep, a few hundred kilobytes of opcodes, overflows the C stack: the reader dies of SIGSEGV
instead of refusing the file in one line. An honest checkpoint nests a few levels (a state dict
of dicts of tensors), so anything past `MAX_DEPTH` is refused before it is unpickled.
"""

from __future__ import annotations

import pickletools
import zipfile
from typing import IO

MAX_DEPTH = 1000
# Opcodes that add to a container already on the stack: the container's depth grows only to
# hold what is added, not with every addition.
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


def pickle_depth(data: bytes) -> int:
    """The deepest nesting of containers and calls `data` builds (0 for a bare value); stops
    counting past `MAX_DEPTH`. Malformed opcodes raise ValueError (pickletools')."""
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[object, int] = {}
    deepest = 0
    for op, arg, _ in pickletools.genops(data):
        name, before, after = op.name, op.stack_before, op.stack_after
        if name == "MARK":
            marks.append(len(stack))
            continue
        popped: list[int] = []
        if pickletools.markobject in before:
            start = marks.pop() if marks else 0
            popped, stack[start:] = stack[start:], []
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        for _ in range(min(below, len(stack))):
            popped.append(stack.pop())
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            stack.extend(popped[::-1])
            memo[arg] = stack[-1] if stack else 0
            continue
        if name == "MEMOIZE":
            stack.extend(popped[::-1])
            memo[len(memo)] = stack[-1] if stack else 0
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, 0))
            continue
        if name == "DUP":
            stack.extend(popped[::-1] * 2)
            continue
        if not after:
            continue
        if name in _IN_PLACE:
            container, items = popped[-1], popped[:-1]
            depth = max([container, *(item + 1 for item in items)])
        else:
            depth = 1 + max(popped) if popped else 0
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend([depth] * len(after))
    return deepest


def torch_file_problem(stream: IO[bytes]) -> str | None:
    """What is wrong with a `torch.save` file before torch unpickles it (None: nothing): it is
    a zip archive (torch's format since 1.6, the only one this template writes) and every
    pickle in it nests at most `MAX_DEPTH` deep. The stream is left at its start."""
    try:
        with zipfile.ZipFile(stream) as archive:
            for name in archive.namelist():
                if name.endswith(".pkl") and pickle_depth(archive.read(name)) > MAX_DEPTH:
                    return f"its {name.rsplit('/', 1)[-1]} nests deeper than {MAX_DEPTH} levels"
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        return f"not a torch.save archive ({str(error)[:80]})"
    finally:
        stream.seek(0)
    return None
