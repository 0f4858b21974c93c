"""``eegloop protocol check|new|schema|show``: protocol files."""
from __future__ import annotations

from .common import PROTOCOL_FILE, Parents, action_parsers, open_db
from .types import OutputFile


def add_parser(commands, parents: Parents) -> None:
    """Add ``protocol`` and its actions to the top-level sub-parsers."""
    from ..protocol import templates

    psub = action_parsers(commands, "protocol", "check or describe protocol files")
    c = psub.add_parser("check", parents=[parents.common], help="validate a protocol (and its stimulus files)")
    c.add_argument("file", metavar="FILE", type=PROTOCOL_FILE)
    c.add_argument("--design-only", action="store_true",
                   help="validate everything but the stimulus files and print the implied design")
    c.set_defaults(run=run)
    c = psub.add_parser("new", parents=[parents.common], help="start a protocol from a shipped template")
    c.add_argument("file", metavar="FILE", type=OutputFile("the new protocol file", suffixes=(".yaml", ".yml")),
                   help="the new protocol file (.yaml)")
    c.add_argument("--from", dest="template", default="interleaved", choices=templates(),
                   help="template: demo, ferrante2023 (the paper, blocked), interleaved (the honest default), n170, "
                        "things-eeg2 (imports of the public dataset), zero-shot (the EEG encoder on a simulated subject)")
    c.add_argument("--force", action="store_true", help="replace the file if it exists")
    c.set_defaults(run=run)
    c = psub.add_parser("schema", parents=[parents.common], help="print every protocol field with its default")
    c.set_defaults(run=run)
    c = psub.add_parser("show", parents=[parents.common], help="print a protocol with all defaults filled in")
    c.add_argument("file", metavar="FILE", type=PROTOCOL_FILE)
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop protocol ACTION``."""
    return {"check": check, "new": new, "schema": schema, "show": show}[args.action](args)


def check(args) -> int:
    from ..protocol import load_protocol
    from ..stimuli import load_stimuli

    proto = load_protocol(args.file)
    if args.design_only:
        if not proto.stimuli.classes:
            from ..errors import ProtocolError

            raise ProtocolError(f"{args.file}: stimuli.classes: --design-only needs the class list in the protocol")
        design, classes = proto.design(), proto.stimuli.classes
        head = f"{args.file}: valid (design only; stimulus files not checked)"
    else:
        stim = load_stimuli(proto)
        design, classes = proto.design(len(stim.classes)), stim.classes
        from ..montage import load_montage

        load_montage(proto.amplifier.montage, proto.base_dir)  # a montage that cannot be read: one line now
        head = f"{args.file}: valid; {len(stim.images)} images in {len(stim.classes)} classes under {stim.root}"
    group = _group_model_line(args, proto)  # before "valid": a group model the visit would refuse is an error
    print(head)
    print(design.describe(classes))
    for line in (_calibration_line(proto, design), group):
        if line:
            print(line)
    return 0


def _calibration_line(proto, design) -> str | None:
    """What ``session.calibration_min`` does to this design (the visit's rule: whole blocks in order until that
    many minutes of stimuli are in), or None when it is not set."""
    from ..protocol.design import calibration_blocks

    cap = proto.session.calibration_min
    if cap is None:
        return None
    per_block = design.trials_per_block * proto.paradigm.image_s
    total = design.n_trials * proto.paradigm.image_s
    k = calibration_blocks(cap, [per_block] * design.n_blocks)
    if k >= design.n_blocks:
        return (f"session.calibration_min {cap:g}: the design holds {total / 60:.1f} min of stimuli, so every block "
                "is shown (it changes nothing)")
    return (f"session.calibration_min {cap:g}: the recording ends after block {k} of {design.n_blocks} "
            f"({k * per_block / 60:.1f} of {total / 60:.1f} min of stimuli); the quick-train and feedback follow")


def _group_model_line(args, proto) -> str | None:
    """``decoder.group_model`` checked as the visit will check it, in the database of ``--db``/``--data`` when
    there is one (one error line: unknown, or reading channels the amplifier lacks); where there is no database
    yet, a line saying it was not checked."""
    name = proto.decoder.group_model
    if not name:
        return None
    from ..errors import EegloopError

    try:
        db = open_db(args, create=False)
    except EegloopError as exc:
        return f"decoder.group_model {name!r}: not checked ({str(exc).removeprefix('eegloop: error: ')})"
    from ..decoder.groupstart import check_group_start

    check_group_start(db, proto)
    return f"decoder.group_model {name!r}: found, and it reads channels the amplifier records"


def schema(args) -> int:
    from ..protocol import describe_schema

    print(describe_schema())
    return 0


def new(args) -> int:
    from .._files import atomic_write_text, umask_mode
    from ..errors import EegloopError, clip_text
    from ..protocol import parse_yaml_text, protocol_from_dict, template_path

    src = template_path(args.template)
    out = args.file  # a .yaml file in a folder we can write in (types.OutputFile)
    if out.exists() and not args.force:
        raise EegloopError(f"{out}: exists already (--force replaces it)")
    text = src.read_text(encoding="utf-8")
    where = clip_text(str(out), 1000)
    # the copy is valid where it will live (stimulus folders are checked by `protocol check`), before it is written
    protocol_from_dict(parse_yaml_text(text, where), source=str(out))
    try:
        atomic_write_text(out, text, mode=umask_mode())  # whole or not at all: an existing file is never truncated
    except OSError as exc:  # disk full, file too large
        raise EegloopError(f"{where}: cannot write it ({exc.strerror or type(exc).__name__})"
                           + ("; the existing file is as it was" if out.exists() else "")) from None
    print(f"wrote {out} from the {args.template} template; edit it, then: eegloop protocol check {out}")
    return 0


def show(args) -> int:
    from ..protocol import load_protocol

    print(load_protocol(args.file).to_yaml(), end="")
    return 0
