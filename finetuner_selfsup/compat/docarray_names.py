"""The tutorial's docarray names (``*_blob``), as aliases of today's ``*_tensor`` methods.

docarray 0.5 renamed ``blob`` to ``tensor``; the tutorial was written against the old
names. The aliases call the same methods, so behaviour is identical.
"""
from __future__ import annotations

from types import ModuleType

#: old (tutorial) name -> current docarray name
BLOB_ALIASES = {
    "load_uri_to_image_blob": "load_uri_to_image_tensor",
    "set_image_blob_normalization": "set_image_tensor_normalization",
    "set_image_blob_inv_normalization": "set_image_tensor_inv_normalization",
    "set_image_blob_channel_axis": "set_image_tensor_channel_axis",
    "set_image_blob_shape": "set_image_tensor_shape",
    "set_image_blob_resample": "set_image_tensor_resample",
    "convert_image_blob_to_uri": "convert_image_tensor_to_uri",
    "convert_image_blob_to_sliding_windows": "convert_image_tensor_to_sliding_windows",
    "save_image_blob_to_file": "save_image_tensor_to_file",
}


def add_blob_aliases(docarray_module: ModuleType) -> None:
    """Give ``docarray.Document`` the old ``*_blob`` image method names (idempotent)."""
    document_cls = getattr(docarray_module, "Document", None)
    if document_cls is None:  # docarray >= 0.30 has no Document; nothing to alias
        return
    for old, new in BLOB_ALIASES.items():
        method = getattr(document_cls, new, None)
        if method is not None and not hasattr(document_cls, old):
            setattr(document_cls, old, method)
