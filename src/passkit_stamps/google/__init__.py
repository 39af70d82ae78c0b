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

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what mypy and IDEs see; at run time the names load on first use
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

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "SCOPE": "auth",
    "ServiceAccount": "auth",
    "TokenSource": "auth",
    "load_service_account_info": "auth",
    "GoogleSettings": "builders",
    "build_loyalty_class": "builders",
    "build_loyalty_object": "builders",
    "patch_body": "builders",
    "skinny_object": "builders",
    "CallbackEvent": "callbacks",
    "CallbackEventType": "callbacks",
    "MemoryNonceStore": "callbacks",
    "NonceStore": "callbacks",
    "RootKey": "callbacks",
    "RootKeys": "callbacks",
    "verify_callback": "callbacks",
    "MessageResult": "client",
    "RetryPolicy": "client",
    "UpsertResult": "client",
    "WalletClient": "client",
    "class_id": "ids",
    "module_id": "ids",
    "object_id": "ids",
    "TokenBucket": "ratelimit",
    "MAX_LINK_LENGTH": "savelink",
    "SaveLink": "savelink",
    "SaveLinkSigner": "savelink",
    "save_link": "savelink",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
