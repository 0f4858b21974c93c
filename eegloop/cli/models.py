"""``eegloop models list|download``: the CLIP and Stable Diffusion weights a protocol needs."""
from __future__ import annotations

from .common import PROTOCOL_FILE, Parents, action_parsers, say


def add_parser(commands, parents: Parents) -> None:
    """Add ``models`` and its actions to the top-level sub-parsers."""
    msub = action_parsers(commands, "models", "the CLIP and Stable Diffusion weights a protocol needs")
    c = msub.add_parser("list", parents=[parents.common], help="what each protocol needs and what is cached here")
    c.add_argument("--protocol", type=PROTOCOL_FILE, help="one protocol (default: every shipped template)")
    c.set_defaults(run=run)
    c = msub.add_parser("download", parents=[parents.common],
                        help="fetch a protocol's missing weights into the usual caches (needs internet)")
    c.add_argument("what", metavar="WHAT", nargs="?", choices=["clip", "generator", "all"], default="all")
    c.add_argument("--protocol", type=PROTOCOL_FILE)
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop models ACTION``."""
    return {"list": models_list, "download": models_download}[args.action](args)


def _protocols(args) -> list:
    from ..protocol import load_protocol, template_path, templates

    if args.protocol is not None:
        return [load_protocol(args.protocol)]
    return [load_protocol(template_path(t)) for t in templates()]


def models_list(args) -> int:
    from ..models_cache import cached_repos, needs

    for proto in _protocols(args):
        print(f"protocol {proto.name}:")
        for n in needs(proto):
            print(f"  {n.line()}  ({n.source})")
    repos = cached_repos()
    print("Hugging Face cache: " + (", ".join(f"{r} ({b / 1e9:.2f} GB)" for r, b in repos) if repos else "empty"))
    return 0


def models_download(args) -> int:
    from ..models_cache import download

    if args.protocol is None:
        from ..errors import EegloopError

        raise EegloopError("--protocol: which protocol's models to fetch (e.g. protocols/ferrante2023.yaml)")
    (proto,) = _protocols(args)
    after = download(proto, args.what, progress=say)
    for n in after:
        print(n.line())
    return 0
