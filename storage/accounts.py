"""Users and their API tokens: who may call the service, and whose searches are whose.

A token is ``segnas_`` and 43 random URL-safe characters (256 bits), shown once when it is
made; the database keeps its SHA-256 only. A fast hash is enough for a secret of that
entropy (there is nothing to guess), and it lets every request find its token by an indexed
lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import uuid
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from errors import SegnasError
from storage.engine import make_engine
from storage.migrate import ensure_schema
from storage.models import LOCAL_ADMIN, ApiToken, User, utcnow
from storage.searches import SearchStore

TOKEN_PREFIX = "segnas_"
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""Account names: lower-case letters, digits, ``.``, ``_`` and ``-``, at most 64."""


class AccountError(SegnasError):
    """A user or token that does not exist, or a name already taken."""


class Principal(BaseModel):
    """Who a request acts as."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    name: str
    is_admin: bool

    def owns(self, owner_id: int) -> bool:
        """Whether this user may see and act on a search owned by ``owner_id``."""
        return self.is_admin or owner_id == self.user_id


class UserRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: int
    name: str
    is_admin: bool
    created_at: datetime


class TokenRecord(BaseModel):
    """A token as listed: never the token itself."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    user: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


class NewToken(BaseModel):
    """A token just made: the only time ``token`` is known."""

    id: str
    user: str
    name: str | None
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 16 <= len(value) <= 200 and value.isascii()


_AUTHENTICATE = (
    select(User.id, User.name, User.is_admin, ApiToken.token_hash)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("hash"), ApiToken.revoked_at.is_(None))
)


class AccountStore:
    """The users and tokens tables of ``store``'s database."""

    def __init__(self, store: SearchStore) -> None:
        self.store = store

    # users

    def add_user(self, name: str, *, admin: bool = False) -> UserRecord:
        """Raises:
        AccountError: the name is taken or not a valid account name."""
        if not USER_NAME.fullmatch(name):
            raise AccountError(
                f"user name {name!r} is not valid: use 1-64 lower-case letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        row = User(name=name, is_admin=admin)
        try:
            with self.store._session() as s:
                s.add(row)
        except IntegrityError:
            raise AccountError(f"user {name!r} exists already") from None
        return UserRecord.model_validate(row)

    def user(self, name: str) -> UserRecord:
        """Raises:
        AccountError: no such user."""
        with self.store._session() as s:
            row = s.scalars(select(User).where(User.name == name)).first()
            if row is None:
                raise AccountError(f"no user named {name!r} (add one: segnas user add NAME)")
            return UserRecord.model_validate(row)

    def users(self) -> list[UserRecord]:
        with self.store._session() as s:
            return [UserRecord.model_validate(r) for r in s.scalars(select(User).order_by(User.id))]

    def local_admin(self) -> Principal:
        """The account of requests on a server without authentication, and of the command
        line: the admin the accounts migration made."""
        user = self.user(LOCAL_ADMIN)
        return Principal(user_id=user.id, name=user.name, is_admin=True)

    # tokens

    def create_token(self, user: str, *, name: str | None = None) -> NewToken:
        """A new token for ``user``; only its hash is stored.

        Raises:
            AccountError: no such user.
        """
        owner = self.user(user)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            id=uuid.uuid4().hex, user_id=owner.id, name=name, token_hash=hash_token(token)
        )
        with self.store._session() as s:
            s.add(row)
        return NewToken(id=row.id, user=owner.name, name=name, token=token)

    def register_token(self, user: str, token: str, *, name: str | None = None) -> bool:
        """Store the hash of a token made elsewhere (a secret file): False if it is known.

        Raises:
            AccountError: no such user, or the token is not in segnas's format.
        """
        if not looks_like_token(token):
            raise AccountError(f"a token starts with {TOKEN_PREFIX!r} and has 16-200 characters")
        owner = self.user(user)
        digest = hash_token(token)
        with self.store._session() as s:
            if s.scalars(select(ApiToken.id).where(ApiToken.token_hash == digest)).first():
                return False
            s.add(ApiToken(id=uuid.uuid4().hex, user_id=owner.id, name=name, token_hash=digest))
        return True

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke a token by its id (``segnas token list`` shows them).

        Raises:
            AccountError: no such token.
        """
        with self.store._session() as s:
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        listed = [t for t in self.tokens() if t.id == token_id]
        if not listed:
            raise AccountError(f"no token with id {token_id!r} (segnas token list shows them)")
        return listed[0]

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        query = (
            select(ApiToken.id, User.name.label("user"), ApiToken.name, ApiToken.created_at,
                   ApiToken.revoked_at)
            .join(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.created_at, ApiToken.id)
        )  # fmt: skip
        if user is not None:
            query = query.where(User.id == self.user(user).id)
        with self.store._session() as s:
            return [TokenRecord.model_validate(r, from_attributes=True) for r in s.execute(query)]

    def authenticate(self, token: str) -> Principal | None:
        """The user a bearer token belongs to; None for an unknown or revoked token."""
        if not looks_like_token(token):
            return None
        digest = hash_token(token)
        row = self.store._read(lambda c: c.execute(_AUTHENTICATE, {"hash": digest}).first())
        # The lookup was by hash; compare again in constant time for good measure.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return Principal(user_id=row.id, name=row.name, is_admin=row.is_admin)


def open_accounts(url: str | None = None) -> AccountStore:
    """The accounts of the database at ``url`` (default: ``DATABASE_URL``, else the embedded
    SQLite in the data folder, the one ``segnas serve`` uses), its schema created first if the
    database is empty. The caller closes ``.store``."""
    engine = make_engine(url)
    ensure_schema(engine)
    return AccountStore(SearchStore(engine=engine))


ADMIN_TOKEN_FILE_ENV = "SEGNAS_ADMIN_TOKEN_FILE"


def bootstrap_admin_token(accounts: AccountStore, path: Path) -> str:
    """The first admin token of a server that asks for tokens, kept in the file ``path``
    (``SEGNAS_ADMIN_TOKEN_FILE``; ``segnas serve``'s default: ``admin-token`` in the data
    folder), never in a log: a token already in the file is registered (a secret mounted by
    the operator); else, if the admin has no token yet, a new one is written there, readable
    by this user only. Returns
    what happened, naming the file and not the token.

    Raises:
        AccountError: the file holds something that is not a token.
    """
    if path.is_file():
        token = path.read_text().strip()
        new = accounts.register_token(LOCAL_ADMIN, token, name=f"from {path.name}")
        return f"the admin token in {path} {'is registered' if new else 'is valid'}"
    if any(t.revoked_at is None for t in accounts.tokens(LOCAL_ADMIN)):
        return f"the {LOCAL_ADMIN} account has a token already: none written to {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    token = accounts.create_token(LOCAL_ADMIN, name=f"first admin token ({path.name})").token
    # Created with mode 0600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(token + "\n")
    return f"made an admin token: it is in {path} (readable by this user only)"
