"""Experiment only (not committed): guard with _pump variants.
EXP_BATCH=1: yield once per network read (join the events' bytes);
EXP_NO_FAILAFTER=1: no anyio.fail_after per read, a plain deadline check after each read."""
import inspect
import os
import sys
import textwrap

import guard.app as A

src = textwrap.dedent(inspect.getsource(A._pump))
if os.environ.get("EXP_BATCH") == "1":
    old = """                    for ev in decoder.feed(raw):
                        out = relay.on_event(ev)
                        if out:
                            yield out
                        st = relay.status
                        if st != RUNNING and st != UPSTREAM_ERROR:
                            stopped = True
                            break
"""
    new = """                    outs = []
                    for ev in decoder.feed(raw):
                        out = relay.on_event(ev)
                        if out:
                            outs.append(out)
                        st = relay.status
                        if st != RUNNING and st != UPSTREAM_ERROR:
                            stopped = True
                            break
                    if outs:
                        yield outs[0] if len(outs) == 1 else b"".join(outs)
"""
    assert old in src, "pump loop changed"
    src = src.replace(old, new)
if os.environ.get("EXP_NO_FAILAFTER") == "1":
    old = "with anyio.fail_after(max(0.001, deadline - time.monotonic())):"
    assert old in src
    src = src.replace(old, "if True:")
    old2 = "                            break\n                    "
    # after the read: cheap deadline check
    src = src.replace("""                        except StopAsyncIteration:
                            break
""", """                        except StopAsyncIteration:
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError
""", 1)
if os.environ.get("EXP_DRAIN") == "1":
    old = "if st != RUNNING and st != UPSTREAM_ERROR:"
    assert old in src
    src = src.replace(old, "if st != RUNNING and st != UPSTREAM_ERROR and st != 1:  # DONE: drain to EOF")
exec(compile(src, A.__file__, "exec"), A.__dict__)
from guard.cli import main

sys.exit(main(sys.argv[1:]))
