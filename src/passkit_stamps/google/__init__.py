"""Google Wallet: loyalty classes and objects for stamp cards, Save links, the REST client and
save/delete callbacks.

Typical use::

    settings = GoogleSettings(issuer_id="3388000000012345678",
                              image_base_url="https://cdn.example/cards/")
    cls = build_loyalty_class(template, settings)
    obj = build_loyalty_object(template, card, settings)
    link = save_link(ServiceAccount.load("key.json"), obj)
    if link.requires_insert:
        async with WalletClient("key.json") as client:
            await client.upsert_object(obj, loyalty_class=cls)
"""

from __future__ import annotations

from .auth import SCOPE, ServiceAccount, TokenSource, load_service_account_info
from .builders import (
    GoogleSettings,
    build_loyalty_class,
    build_loyalty_object,
    patch_body,
    skinny_object,
)
from .callbacks import (
    CallbackEvent,
    CallbackEventType,
    MemoryNonceStore,
    NonceStore,
    RootKey,
    RootKeys,
    verify_callback,
)
from .client import MessageResult, RetryPolicy, UpsertResult, WalletClient
from .ids import class_id, module_id, object_id
from .ratelimit import TokenBucket
from .savelink import MAX_LINK_LENGTH, SaveLink, SaveLinkSigner, save_link

__all__ = [
    "MAX_LINK_LENGTH",
    "SCOPE",
    "CallbackEvent",
    "CallbackEventType",
    "GoogleSettings",
    "MemoryNonceStore",
    "MessageResult",
    "NonceStore",
    "RetryPolicy",
    "RootKey",
    "RootKeys",
    "SaveLink",
    "SaveLinkSigner",
    "ServiceAccount",
    "TokenBucket",
    "TokenSource",
    "UpsertResult",
    "WalletClient",
    "build_loyalty_class",
    "build_loyalty_object",
    "class_id",
    "load_service_account_info",
    "module_id",
    "object_id",
    "patch_body",
    "save_link",
    "skinny_object",
    "verify_callback",
]
