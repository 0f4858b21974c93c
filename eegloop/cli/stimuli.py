"""``eegloop stimuli synth``: stimulus sets."""
from __future__ import annotations

from .common import SEED, Parents, action_parsers
from .types import Integer, OutputFolder


def add_parser(commands, parents: Parents) -> None:
    """Add ``stimuli`` and its actions to the top-level sub-parsers."""
    from ..stimuli import SYNTH_CLASSES

    ssub = action_parsers(commands, "stimuli", "stimulus sets")
    c = ssub.add_parser("synth", parents=[parents.common], help="draw distinct procedural images per class")
    c.add_argument("--classes", type=Integer(2, len(SYNTH_CLASSES)), default=4,
                   help=f"number of classes (2-{len(SYNTH_CLASSES)})")
    c.add_argument("--per-class", type=Integer(1, 100_000), default=20, help="images per class")
    c.add_argument("--out", type=OutputFolder("the stimulus folder (created if needed)"), required=True,
                   help="output folder (one sub-folder per class)")
    c.add_argument("--size", type=Integer(16, 2048, "pixels"), default=256, help="image edge in pixels (16-2048)")
    c.add_argument("--seed", type=SEED, default=0)
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop stimuli synth``."""
    return {"synth": synth}[args.action](args)


def synth(args) -> int:
    from .._files import new_folders
    from ..stimuli import synthesize_stimuli

    try:
        with new_folders(args.out, private=False) as created:  # folders made here are removed again on failure
            st = synthesize_stimuli(args.out, args.classes, args.per_class, size=args.size, seed=args.seed,
                                    created=created)
    except OSError as exc:  # disk full, file too large, a class folder that is a file
        from ..errors import EegloopError

        raise EegloopError(f"--out: drawing the images into {args.out} failed ({exc.strerror or type(exc).__name__}); "
                           "the folders this command made are removed, images that existed are as they were") from None
    print(f"drew {len(st.images)} images of {len(st.classes)} classes into {args.out}: "
          + ", ".join(f"{c} ({n})" for c, n in st.classes.items()))
    return 0
