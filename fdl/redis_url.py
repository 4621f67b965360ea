"""What a Redis URL (``FDL_REDIS_URL``) must be for both of its clients, redis-py (the job store)
and kombu (Celery's broker), and the one form of its credentials they both read."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

REDIS_URL_FORM = "the form is redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS"


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL that both its clients take, redis-py (the job store) and
    kombu (Celery's broker), or None. Never quotes it (a password). Before, kombu took
    ``redis:6379`` for an AMQP host it retried 100 times; other schemes ended in a traceback."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # a port that is no number or out of range, a broken [IPv6] host
        return "its port is not a number from 1 to 65535, or its host does not parse"
    if scheme == "unix":
        return "a Unix socket (unix://) is not supported: Celery's broker (kombu) takes none"
    if scheme not in ("redis", "rediss"):
        return "its scheme is not redis:// or rediss://"
    if not host:
        return "it names no host"
    if port == 0:
        return "its port is not a number from 1 to 65535"
    if not re.fullmatch(r"/?\d*", parts.path):
        return "the database after the host is not a number"
    return None


# Query parameters of a Redis URL that redis-py reads as credentials (redis://host/0?password=).
CREDENTIAL_QUERY = ("username", "password")


def credentials_in_userinfo(url: str) -> str:
    """``url`` with the credentials that redis-py reads from its query (``?password=``,
    ``?username=``) moved into its userinfo (``redis://user:password@host``), percent-encoded.

    redis-py takes either form; kombu (the Celery broker) takes a password only in the userinfo,
    and fails on one in the query (``TypeError: dict() got multiple values for keyword argument
    'password'``). Read as redis-py reads it: the userinfo's value wins, else the first non-empty
    value of the query. Other URLs, and one that does not parse, are returned as they are."""
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("redis", "rediss"):
            return url
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return url
    if not any(name in CREDENTIAL_QUERY for name, _value in query):
        return url
    from_query: dict[str, str] = {}
    for name, value in query:
        if name in CREDENTIAL_QUERY and value:
            from_query.setdefault(name, value)
    user = parts.username or quote(from_query.get("username", ""), safe="")
    password = parts.password or quote(from_query.get("password", ""), safe="")
    userinfo = user + (f":{password}" if password else "")
    host = parts.netloc.rpartition("@")[2]
    rest = [(name, value) for name, value in query if name not in CREDENTIAL_QUERY]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return parts._replace(netloc=netloc, query=urlencode(rest)).geturl()
