"""``eegloop simulate`` and ``eegloop replay``: EEG and markers on LSL without a subject (a virtual amplifier,
a recording played back)."""
from __future__ import annotations

from ..recorder.importers.registry import format_names
from .common import CHANNELS, PROTOCOL_FILE, SCOPES, SEED, STREAM_NAME, Parents
from .types import EventsMap, InputFile, Integer, Number


def add_parser(commands, parents: Parents) -> None:
    """Add ``simulate`` and ``replay`` to the top-level sub-parsers."""
    c = commands.add_parser("simulate", parents=[parents.common],
                            help="run the virtual amplifier (a simulated subject on LSL)")
    c.add_argument("--protocol", type=PROTOCOL_FILE,
                   help="take amplifier and amplifier.simulate settings from a protocol")
    c.add_argument("--name", type=STREAM_NAME, help="LSL stream name (default eegloop-sim)")
    c.add_argument("--channels", type=Integer(1, 1024), help="EEG channels (default 128)")
    # the simulated subject's 14-70 Hz drift band needs more than 31 Hz; the protocol's bound above
    c.add_argument("--sfreq", type=Number(32, 100_000, unit="Hz"), help="sampling rate, Hz (default 1000)")
    c.add_argument("--snr", type=Number(0, 1000), help="class response amplitude relative to background")
    c.add_argument("--class-signal", type=Number(0, 1), help="0 removes all class information")
    c.add_argument("--block-drift", type=Number(0, 1e6, unit="µV"),
                   help="per-block offset independent of class, µV (confound)")
    c.add_argument("--onset-channel", action="store_true", help="add a STIM channel marking each onset sample")
    c.add_argument("--seed", type=SEED)
    c.add_argument("--scope", choices=SCOPES, help="LSL scope (default machine)")
    c.add_argument("--duration", type=Number(0, 1e6, lo_open=True, unit="seconds"),
                   help="stop after this many seconds (default: until Ctrl-C)")
    c.set_defaults(run=run)

    c = commands.add_parser("replay", parents=[parents.common], help="stream a recording as live LSL EEG + markers")
    c.add_argument("file", metavar="FILE", type=InputFile("a recording file (XDF, CSV, or any format MNE reads)"))
    c.add_argument("--speed", type=Number(0, 1000, lo_open=True, unit="(1 is real time)"), default=1.0,
                   help="how much faster than real time")
    c.add_argument("--format", choices=format_names("recording"))  # the importers' registry
    c.add_argument("--events", type=EventsMap(), help="marker value -> class ('1=house,2=face'): sent as stim_on markers")
    c.add_argument("--channels", type=CHANNELS, help="comma-separated channels to stream")
    c.add_argument("--protocol", type=PROTOCOL_FILE, help="take stream names, sfreq and block length from a protocol")
    c.add_argument("--name", type=STREAM_NAME, help="EEG stream name")
    c.add_argument("--marker-name", type=STREAM_NAME, help="marker stream name")
    c.add_argument("--scope", choices=SCOPES)
    c.add_argument("--wait", type=Number(0, 3600, unit="seconds"), default=0.0,
                   help="wait up to this many seconds for a recorder to connect")
    c.set_defaults(run=run)


def run(args) -> int:
    """Run ``eegloop simulate`` or ``eegloop replay``."""
    return {"simulate": simulate, "replay": replay}[args.command](args)


def _amplifier(args):
    """The amplifier and simulated subject: the protocol's (or the defaults) with the options given over them."""
    import dataclasses

    from ..protocol import AmplifierConfig, SimulateConfig, load_protocol

    proto = None
    if args.protocol:
        proto = load_protocol(args.protocol)
        amp, sim = proto.amplifier, proto.amplifier.simulate or SimulateConfig()
    else:
        amp, sim = AmplifierConfig(), SimulateConfig()
    over = {k: v for k, v in dict(stream_name=args.name, channels=args.channels, sfreq=args.sfreq,
                                  lsl_scope=args.scope).items() if v is not None}
    amp = dataclasses.replace(amp, **over)
    sover = {k: v for k, v in dict(snr=args.snr, class_signal=args.class_signal, block_drift=args.block_drift,
                                   seed=args.seed, onset_channel=args.onset_channel or None).items() if v is not None}
    sim = dataclasses.replace(sim, **sover)
    return proto, amp, sim


def simulate(args) -> int:
    import dataclasses
    import time

    proto, amp, sim = _amplifier(args)  # a bad protocol is refused before the streaming modules load
    from ..lsl import configure_lsl
    from ..recorder.simulator import VirtualAmplifier

    configure_lsl(amp.lsl_scope)
    embeddings = None
    if args.protocol and sim.embedding_signal > 0:
        from ..rig import simulated_embeddings

        embeddings = simulated_embeddings(dataclasses.replace(proto, amplifier=dataclasses.replace(amp, simulate=sim)))
    va = VirtualAmplifier(amp, sim, embeddings=embeddings).start(duration=args.duration)
    print(f"virtual amplifier '{amp.stream_name}': {amp.channels} ch at {amp.sfreq:g} Hz, snr {sim.snr}, "
          f"class_signal {sim.class_signal}, block_drift {sim.block_drift}, seed {sim.seed}; "
          f"following markers on '{amp.marker_stream_name}'"
          + (f"; stops after {args.duration:g} s" if args.duration else "; Ctrl-C stops"), flush=True)
    try:
        t0 = time.monotonic()
        while va.alive:
            va.wait(1.0)
            if args.verbose:
                print(f"  {time.monotonic() - t0:6.1f} s, {va.samples_pushed} samples, {va.markers_seen} markers",
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        va.stop()
    print(f"stopped after {va.samples_pushed} samples ({va.samples_pushed / amp.sfreq:.1f} s), "
          f"{va.markers_seen} markers seen")
    return 0


def replay(args) -> int:
    from ..lsl import configure_lsl
    from ..protocol import load_protocol
    from ..recorder.importers import parse_events, read_recording
    from ..recorder.player import Player

    proto = load_protocol(args.protocol) if args.protocol else None
    configure_lsl(args.scope or (proto.amplifier.lsl_scope if proto else "machine"))
    channels = list(args.channels) if args.channels else None
    rec = read_recording(args.file, args.format, channels,  # the same decision as `import`
                         channel_types=proto.amplifier.channel_types if proto else None, protocol=proto)
    name = args.name or (proto.amplifier.stream_name if proto else "eegloop-replay")
    markers = args.marker_name or (proto.amplifier.marker_stream_name if proto else "eegloop-markers")
    sfreq = proto.amplifier.sfreq if proto and abs(proto.amplifier.sfreq - rec.sfreq) < 0.01 * rec.sfreq else None
    pl = Player(rec, name, markers, parse_events(args.events), speed=args.speed, sfreq=sfreq,
                block_s=proto.paradigm.block_s if proto else 25.0).start(wait_for_consumers=args.wait)
    print(f"replaying {args.file}: {len(rec.ch_names)} ch at {pl.sfreq:g} Hz as '{name}' + markers '{markers}', "
          f"{rec.duration / args.speed:.0f} s at speed {args.speed:g} (Ctrl-C stops)", flush=True)
    try:
        pl.wait()
    except KeyboardInterrupt:
        pl.stop()
    print(f"done: {pl.samples_pushed} samples, {pl.markers_pushed} markers")
    return 0
