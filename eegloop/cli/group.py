"""``eegloop pretrain``: a group model trained on consenting subjects' epochs (one or more), or the list of group
models."""
from __future__ import annotations

from .common import PROTOCOL_FILE, SEED, SUBJECT, Parents, open_db, say
from .types import CommaList, Integer, Text

# a group model's name: it names its folder (models/group-<name>/), so letters, digits, '-' and '_'
GROUP_NAME = Text("a group model name (letters, digits, '-' and '_')", 64, pattern=r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# eegloop.decoder.group.GROUP_METHODS, written out: building the parser must not import the decoder (torch)
GROUP_METHODS = ("riemann", "conv1d", "lstm", "eegnet", "shallow_fbcsp")


def add_parser(commands, parents: Parents) -> None:
    """Add ``pretrain`` to the top-level sub-parsers."""
    c = commands.add_parser("pretrain", parents=[parents.common],
                            help="train one group model on consenting subjects' epochs (one or more), or list them")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--subjects", type=CommaList(SUBJECT, "subject codes"),
                     help="comma-separated subjects, each with group consent (eegloop subject consent S --group yes)")
    who.add_argument("--all", action="store_true", help="every subject with group consent (the others are listed "
                                                        "as skipped)")
    who.add_argument("--list", action="store_true", help="list the group models and whose data each holds")
    c.add_argument("--exclude", type=CommaList(SUBJECT, "subject codes"), default=[],
                   help="with --all: comma-separated subjects to leave out")
    c.add_argument("--name", type=GROUP_NAME, help="the group model's name (required to train one)")
    c.add_argument("--method", choices=list(GROUP_METHODS), default=None,
                   help="riemann (default: xDAWN covariances + tangent space + logistic regression, re-centred per "
                        "subject with pyriemann.transfer) or a network (Euclidean alignment per subject)")
    c.add_argument("--no-align", action="store_true", help="pool the subjects' epochs without aligning them "
                                                           "(a control: what alignment gains)")
    c.add_argument("--protocol", type=PROTOCOL_FILE, help="reference protocol: montage, preprocessing, analysis "
                                                          "window (default: the first subject's latest session's)")
    c.add_argument("--seed", type=SEED, default=None, help="networks: the seed (default 0)")
    ddp = c.add_argument_group("data-parallel training of a network (PyTorch DDP, launched as torchrun launches)")
    ddp.add_argument("--nproc", type=Integer(1, 1024), default=None,
                     help="processes (ranks) on this machine (default: one, in this process)")
    ddp.add_argument("--nnodes", type=Integer(1, 1024), default=1,
                     help="machines taking part; each runs the same command (default 1)")
    ddp.add_argument("--rdzv-endpoint", type=Text("HOST:PORT", 300), default=None,
                     help="HOST:PORT every machine meets at (needed with --nnodes above 1; default on one machine: "
                          "127.0.0.1 and a free port)")
    ddp.add_argument("--rdzv-id", type=Text("a run id", 64), default=None,
                     help="the run's id at the rendezvous (the same on every machine; default eegloop-pretrain)")
    ddp.add_argument("--rdzv-timeout", type=Integer(1, 86_400), default=None, metavar="S",
                     help="seconds the rendezvous waits for every machine before giving up (default 300)")
    ddp.add_argument("--checkpoint", type=Text("a file path", 4096), default=None,
                     help="written after every epoch by rank 0; a rerun with the same file resumes after its last "
                          "finished epoch")
    c.add_argument("--max-epochs", type=Integer(1, 10_000), default=None,
                   help="networks: at most this many training epochs (default: the protocol's training.max_epochs)")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop pretrain``."""
    from ..errors import EegloopError

    if args.list:
        given = _training_options(args)
        if given:
            raise EegloopError(f"--list: not with {given[0]} (it lists the stored group models; it trains none)")
        return list_group_models(open_db(args, create=False))
    if args.name is None:
        raise EegloopError("--name: required to train a group model (e.g. --name G1)")
    args.method = args.method or "riemann"
    from ..decoder.group import plan_group, pretrain

    proto = None
    if args.protocol is not None:
        from ..protocol import load_protocol

        proto = load_protocol(args.protocol)
    launch = _launch(args)
    db = open_db(args, create=False)
    plan = plan_group(db, subjects=args.subjects, all_subjects=args.all, exclude=args.exclude, name=args.name,
                      method=args.method, protocol=proto)
    for line in plan.lines():
        print(line)
    if launch is not None and launch.nnodes > 1:
        print(f"data-parallel: meeting {launch.nnodes - 1} other machine{'s' * (launch.nnodes > 2)} at "
              f"{launch.rdzv_endpoint} (each runs this same command); giving up after {launch.join_timeout_s} s",
              flush=True)
    res = pretrain(db, plan.subjects, args.name, method=args.method, align=not args.no_align, protocol=proto,
                   seed=args.seed or 0, max_epochs=args.max_epochs, progress=say, launch=launch,
                   checkpoint=args.checkpoint)
    if res is None:
        return 0
    for line in res.lines():
        print(line)
    return 0


def group_model_lines(rec) -> list[str]:
    """A stored group model as the CLI lists it: name, method, alignment, protocol, then one line per subject."""
    cfg = rec.config
    grid = cfg.get("grid", {})
    n = sum(m.n_epochs for m in rec.members)
    k = len(rec.members)
    lines = [f"{rec.name} (id {rec.id}, {rec.kind}, {rec.created_at:%Y-%m-%d %H:%M}): {k} subject{'s' * (k != 1)}, "
             f"{n} epochs, {len(grid.get('channel_names', []))} channels at {grid.get('sfreq', 0):g} Hz; alignment "
             f"{cfg.get('alignment')}; protocol {cfg.get('protocol_name')} sha256 "
             f"{str(cfg.get('protocol_sha256'))[:12]}; {rec.checkpoint_path}"]
    for m in rec.members:
        when = f"{m.consent_at:%Y-%m-%d %H:%M}" if m.consent_at else "unknown"
        lines.append(f"  {m.code}: sessions {', '.join(map(str, m.session_ids))}; {m.n_epochs} epochs; group "
                     f"consent yes at training (given {when})")
    return lines


def list_group_models(db) -> int:
    """``pretrain --list``."""
    recs = db.list_group_models()
    if not recs:
        print("no group models yet (train one with: eegloop pretrain --all --name G)")
    for rec in recs:
        for line in group_model_lines(rec):
            print(line)
    return 0


def _launch(args):
    """The data-parallel launch the options ask for (None: one process), checked before any work."""
    from ..errors import EegloopError

    if args.method == "riemann":
        network_only = [o for o in _training_options(args) if o not in _BOTH]
        if network_only:
            raise EegloopError(f"{network_only[0]}: for the networks (--method conv1d, lstm, eegnet, ...), not the "
                               "Riemannian pipeline (no seed, epochs or data-parallel launch)")
    launched = args.nproc is not None or args.nnodes != 1 or args.rdzv_endpoint is not None
    if not launched:
        later = [name for name, on in (("--rdzv-id", args.rdzv_id is not None),
                                       ("--rdzv-timeout", args.rdzv_timeout is not None)) if on]
        if later:
            raise EegloopError(f"{later[0]}: only with a data-parallel launch (--nproc N or --nnodes N "
                               "--rdzv-endpoint HOST:PORT)")
        if args.checkpoint is None:
            return None
    from ..decoder.distributed import Launch, check_checkpoint, check_ranks_here

    launch = Launch(nproc=args.nproc or 1, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint,
                    rdzv_id=args.rdzv_id or "eegloop-pretrain", join_timeout_s=args.rdzv_timeout or 300)
    try:
        launch.check()
        check_ranks_here(launch.nproc)
        if args.checkpoint is not None:
            check_checkpoint(args.checkpoint, kind=args.method)
    except ValueError as exc:
        raise EegloopError(str(exc)) from None
    return launch


#: the training options every method reads (the others are the networks')
_BOTH = ("--subjects", "--all", "--method", "--exclude", "--name", "--no-align", "--protocol")


def _training_options(args) -> list[str]:
    """The options given that only training reads (networks' above all), in the order --help lists them."""
    return [name for name, on in (("--subjects", args.subjects is not None), ("--all", args.all),
                                  ("--method", args.method is not None),
                                  ("--exclude", bool(args.exclude)), ("--name", args.name is not None),
                                  ("--no-align", args.no_align), ("--protocol", args.protocol is not None),
                                  ("--seed", args.seed is not None), ("--nproc", args.nproc is not None),
                                  ("--nnodes", args.nnodes != 1), ("--rdzv-endpoint", args.rdzv_endpoint is not None),
                                  ("--rdzv-id", args.rdzv_id is not None),
                                  ("--rdzv-timeout", args.rdzv_timeout is not None),
                                  ("--checkpoint", args.checkpoint is not None),
                                  ("--max-epochs", args.max_epochs is not None)) if on]
