"""The one fix for numpy values crossing Pyro4.

hpbandster 0.7.4 sends configurations, budgets and results through Pyro4, whose
serpent serializer does not know numpy scalars. ConfigSpace 1.x hands out
`numpy.str_`, `numpy.bool_`, `numpy.int64` and `numpy.float64` values, and the
budgets hpbandster computes are `numpy.float64`. When serpent refuses one, the
dispatcher's job-runner thread dies and the master waits forever without an
error. `register_numpy_serializers()` teaches serpent to send every numpy
scalar (and array) as the equivalent Python value; call it before any Pyro
object (name server, dispatcher, worker) is created. Values we build ourselves
(configurations, worker results, JSON files) go through the package's one plain-Python
converter, `submission.to_jsonable`.
"""
from __future__ import annotations

import threading

import numpy as np
import serpent

_registered = False
_lock = threading.Lock()


def _serialize_numpy_scalar(obj, serializer, outputstream, indentlevel):
    serializer._serialize(obj.item(), outputstream, indentlevel)


def _serialize_numpy_array(obj, serializer, outputstream, indentlevel):
    serializer._serialize(obj.tolist(), outputstream, indentlevel)


def register_numpy_serializers() -> None:
    """Register serpent class serializers for numpy scalars and arrays (idempotent).

    serpent looks registered classes up with `isinstance`, so registering
    `np.generic` covers every numpy scalar type (`np.str_`, `np.bool_`, all ints
    and floats). The concrete types are registered as well so that a lookup by
    exact type finds them too.
    """
    global _registered
    with _lock:
        if _registered:
            return
        scalar_types = (np.generic, np.str_, np.bool_, np.integer, np.floating,
                        np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                        np.float16, np.float32, np.float64)
        for clazz in scalar_types:
            serpent.register_class(clazz, _serialize_numpy_scalar)
        serpent.register_class(np.ndarray, _serialize_numpy_array)
        _registered = True
