"""`infrawatch api` (serve, migrate) and `infrawatch users create`. Parsers only; handlers import
what they need when they run, so `infrawatch --help` stays fast."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

PASSWORD_ENV = "INFRAWATCH_NEW_USER_PASSWORD"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from infrawatch.api.app import create_app
    from infrawatch.config import load_settings

    settings = load_settings()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.api.host,
        port=args.port or settings.api.port,
        log_level=args.log_level,
        proxy_headers=False,
    )
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from infrawatch.api import db
    from infrawatch.config import load_settings

    settings = load_settings()
    url = settings.api.database_url(settings.run_dir)
    db.migrate(db.make_engine(url))
    print(f"schema up to date at {url.split('@')[-1]}", file=sys.stderr)
    return 0


def _password() -> str:
    from infrawatch.errors import UserError

    pw = os.environ.get(PASSWORD_ENV)
    if pw is None:
        if not sys.stdin.isatty():
            raise UserError(f"no terminal to prompt on: set {PASSWORD_ENV}")
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            raise UserError("the passwords differ; try again")
    if len(pw) < 8:
        raise UserError("the password needs at least 8 characters")
    return pw


def _users_create(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from infrawatch.api import db, security
    from infrawatch.api.models import User
    from infrawatch.config import load_settings
    from infrawatch.errors import UserError

    settings = load_settings()
    engine = db.make_engine(settings.api.database_url(settings.run_dir))
    db.migrate(engine)
    a = settings.api
    passwords = security.Passwords(a.argon2_time_cost, a.argon2_memory_kib)
    with db.session_factory(engine)() as s:
        if s.scalar(select(User).where(User.username == args.username)) is not None:
            raise UserError(f"user {args.username!r} exists; change it through PATCH /api/v1/users/ID")
        s.add(User(username=args.username, password_hash=passwords.hash(_password()), role=args.role))
        s.commit()
    print(f"created {args.role} {args.username!r}", file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    a = sub.add_parser("api", help="the HTTP API (FastAPI): serve it, or migrate its database")
    asub = a.add_subparsers(dest="api_command", metavar="ACTION")
    a.set_defaults(func=_serve, host=None, port=None, log_level="info")
    serve = asub.add_parser("serve", help="serve with uvicorn (the default); migrates first")
    serve.add_argument("--host", help="default: INFRAWATCH_API__HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: INFRAWATCH_API__PORT (8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    asub.add_parser("migrate", help="apply the Alembic migrations (INFRAWATCH_API__DB_URL)").set_defaults(
        func=_migrate
    )

    u = sub.add_parser("users", help="API users")
    usub = u.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    c = usub.add_parser(
        "create",
        help=f"create a user (the first admin); the password is prompted, or taken from {PASSWORD_ENV}",
    )
    c.add_argument("username")
    c.add_argument("--role", default="admin", choices=["admin", "scientist", "operator", "viewer"])
    c.set_defaults(func=_users_create)
