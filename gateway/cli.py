"""The ``pathway`` command line (DESIGN §7)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from gateway.cli_support import open_gateway as _gateway, print_json as _print_json
from gateway.delivery import cli as delivery_commands
from gateway.reporting import cli as report_commands
from gateway.settings import Settings

Command = Callable[[argparse.Namespace], int]


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    settings = Settings.from_env(**({"workers": args.workers} if args.workers else {}))
    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import build_demo
    from gateway.server import serve

    os.environ.setdefault("PATHWAY_EXPOSE_API_DOCS", "1")  # a demo shows its API; production keeps it off
    os.environ.setdefault("PATHWAY_LOOPBACK_SUBSCRIPTIONS", "1")  # partners may try Subscriptions to receivers on 127.0.0.1
    settings = Settings.from_env()
    summary = build_demo(settings, Path(args.out), port=args.port)
    _print_json(summary)
    if not args.no_serve:
        from gateway.demo_inbox import serve_inboxes

        inboxes = serve_inboxes(summary["inboxes"], f"http://127.0.0.1:{args.port}", Path(args.out) / "inbox")
        print(f"Pathway demo at http://127.0.0.1:{args.port}  (FHIR base /fhir, console /console, credentials in {args.out}/clients)")
        print("Demo partners' inboxes: " + ", ".join(f"{i.organization} {i.url.removesuffix('/inbox')}/" for i in inboxes))
        try:
            serve(settings, host="127.0.0.1", port=args.port)
        finally:
            for inbox in inboxes:
                inbox.close()
    return 0


def cmd_conf_load(args: argparse.Namespace) -> int:
    from gateway.conf import ConfError, load_conf
    from gateway.directory import import_conf

    try:
        conf = load_conf(Path(args.dir))
    except ConfError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    from gateway.delivery.outbox import DeliveryConfigError

    gateway = _gateway()
    try:
        _print_json(import_conf(gateway, conf, Path(args.dir)))
    except (ConfError, DeliveryConfigError) as error:  # e.g. a console-made agreement version, or a webhook a partner subscribed itself
        print(f"configuration error: {error}; nothing was imported", file=sys.stderr)
        return 2
    finally:
        gateway.close()
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from gateway.auth.clients import credentials, new_client_key, register_client
    from gateway.store.crypto import write_owner_only

    system, sep, value = args.org.partition("|")
    if not sep or not system or not value:
        print("--org must be SYSTEM|VALUE, e.g. https://pathway.scot/Id/partner|rehab-tayview-house", file=sys.stderr)
        return 2
    key = new_client_key()
    gateway = _gateway()
    try:
        with gateway.transaction() as session:
            client = register_client(
                session, args.client, args.org, args.scopes.split(), kind=args.kind, public_keys=[key.public_jwk]
            )
            doc = credentials(client, key, args.base_url.rstrip("/"))
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    finally:
        gateway.close()
    out = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    if args.out:
        path = Path(args.out)
        write_owner_only(path, out)
        print(f"client {args.client} registered; credentials in {path}")
    else:
        sys.stdout.write(out.decode() + "\n")
    return 0


def cmd_keys_rotate_data(_args: argparse.Namespace) -> int:
    from gateway.store.crypto import save_keyring
    from gateway.store.rotation import reseal_all

    gateway = _gateway()
    try:
        rotated = gateway.keyring.rotated()
        with gateway.transaction() as session:
            counts = reseal_all(session, rotated)
        # Save only after the rows are re-sealed: a failure leaves the old keyring in force.
        save_keyring(gateway.settings.secrets_dir, rotated)
    finally:
        gateway.close()
    total = sum(counts.values()) - counts["audit_patients_blinded"]
    _print_json({"active_key": rotated.active, "reencrypted": total, "by_kind": counts})
    return 0


def cmd_reindex(_args: argparse.Namespace) -> int:
    gateway = _gateway()
    try:
        with gateway.transaction() as session:
            count = gateway.repository(session).reindex_all()
    finally:
        gateway.close()
    _print_json({"reindexed": count})
    return 0


def cmd_audit_verify(_args: argparse.Namespace) -> int:
    from gateway.audit.chain import verify

    gateway = _gateway()
    try:
        with gateway.sessions() as session:
            report = verify(session, gateway.signing_key)
    finally:
        gateway.close()
    if report.ok:
        print(f"audit chain intact: {report.checked} entries, head {report.head_seq}")
        return 0
    print(f"audit chain broken: {report.broken}")
    return 1


def cmd_audit_seal(_args: argparse.Namespace) -> int:
    from gateway.audit.chain import seal

    gateway = _gateway()
    try:
        with gateway.transaction() as session:
            sealed = seal(session, gateway.signing_key)
    finally:
        gateway.close()
    print(f"sealed chain head {sealed.seq}" if sealed else "chain head already sealed")
    return 0


def cmd_assertion(args: argparse.Namespace) -> int:
    from gateway.client import client_assertion

    creds = orjson.loads(Path(args.credentials).read_bytes())
    print(client_assertion(creds["client_id"], creds["token_url"], creds["private_key_pem"], creds["kid"]))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from adapters import IngestError
    from gateway.app import create_app
    from gateway.ingest.pipeline import command_line_caller, operator_organization, run_ingest

    gateway = _gateway()
    try:
        organization = args.org or operator_organization(gateway)
        app = create_app(gateway=gateway)
        report = run_ingest(
            gateway, app.state.fhir, args.source, Path(args.path), caller=command_line_caller(organization), dry_run=args.dry_run
        )
    except IngestError as error:
        print(f"cannot read {args.path}: {error}", file=sys.stderr)
        return 2
    except LookupError as error:
        print(str(error), file=sys.stderr)
        return 2
    finally:
        gateway.close()
    _print_json(report)
    return 0


def cmd_consent_decide(_args: argparse.Namespace) -> int:
    from consent import decide_many

    try:
        items = orjson.loads(sys.stdin.buffer.read())
    except orjson.JSONDecodeError as error:
        print(f"stdin is not JSON: {error}", file=sys.stderr)
        return 2
    if not isinstance(items, list):
        print('stdin must be a JSON array of {"consents": [...], "agreements": [...], "request": {...}}', file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(decide_many(items)).decode() + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathway", description="Pathway information-sharing gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, help="request-serving processes (default PATHWAY_WORKERS, else 1)")
    serve.set_defaults(run=cmd_serve)

    demo = commands.add_parser("demo", help="fresh database with the demo partnership, then serve")
    demo.add_argument("--out", default=".pathway-demo")
    demo.add_argument("--no-serve", action="store_true")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(run=cmd_demo)

    conf = commands.add_parser("conf", help="configuration").add_subparsers(dest="conf_command", required=True)
    load = conf.add_parser("load", help="validate and import conf/ into the database")
    load.add_argument("dir", nargs="?", default="conf")
    load.set_defaults(run=cmd_conf_load)

    keys = commands.add_parser("keys", help="client and data keys").add_subparsers(dest="keys_command", required=True)
    new = keys.add_parser("new", help="make a client key pair and register the client")
    new.add_argument("client")
    new.add_argument("--org", required=True, help="SYSTEM|VALUE of the client's organisation")
    new.add_argument("--scopes", required=True)
    new.add_argument("--kind", default="system", choices=["system", "portal"])
    new.add_argument("--base-url", default="http://127.0.0.1:8000")
    new.add_argument("--out")
    new.set_defaults(run=cmd_keys_new)
    rotate = keys.add_parser("rotate-data", help="new data key; re-encrypt everything stored about people")
    rotate.set_defaults(run=cmd_keys_rotate_data)

    reindex = commands.add_parser("reindex", help="rebuild the search index of every current resource (after an upgrade)")
    reindex.set_defaults(run=cmd_reindex)

    ingest = commands.add_parser("ingest", help="map (and store) a partner extract; prints the ingest report")
    ingest.add_argument("source", choices=["emis", "socialwork", "thirdsector"])
    ingest.add_argument("path")
    ingest.add_argument("--dry-run", action="store_true", help="map and validate without writing")
    ingest.add_argument("--org", help="SYSTEM|VALUE of the pushing organisation (default: the rehab team of pathway.yaml)")
    ingest.set_defaults(run=cmd_ingest)

    consent = commands.add_parser("consent", help="consent decisions").add_subparsers(dest="consent_command", required=True)
    consent.add_parser("decide", help="decide a JSON array of requests read from stdin").set_defaults(run=cmd_consent_decide)

    assertion = commands.add_parser("assertion", help="print a signed client assertion for a credentials file")
    assertion.add_argument("credentials")
    assertion.set_defaults(run=cmd_assertion)

    audit = commands.add_parser("audit", help="audit trail").add_subparsers(dest="audit_command", required=True)
    audit.add_parser("verify", help="check the hash chain and seals").set_defaults(run=cmd_audit_verify)
    audit.add_parser("seal", help="sign the current chain head").set_defaults(run=cmd_audit_seal)

    delivery_commands.add_commands(commands)
    report_commands.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
