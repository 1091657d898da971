"""Device profiles: the schema, strict validation, the `Profile` type and the writer.

Import from here: `from edgesparse.profiles import Profile, load_profile, available_profiles`.
The modules: `schema` (tables, keys, types, ranges), `validate` (every problem at once),
`profile` (the `Profile` type, loading, names and paths), `writer` (tomlkit edits that keep
comments and [sources]). Raises `ProfileError` and `ProfileValidationError` (see each module).
"""

from __future__ import annotations

from edgesparse.errors import ProfileError
from edgesparse.profiles.profile import (
    PROFILE_DIR,
    NpuConfig,
    Profile,
    available_profiles,
    display_path,
    load_profile,
)
from edgesparse.profiles.schema import (
    CLASSES,
    KERNELS,
    RUNTIME_FOR_CLASS,
    SCHEMA,
    SOURCES,
    Key,
    Table,
    core_from_cpu,
    schema_keys,
)
from edgesparse.profiles.validate import ProfileValidationError, numeric_paths, validate
from edgesparse.profiles.writer import (
    LATENCY_ORDER,
    check_profile_text,
    set_sources,
    set_table,
    write_latency,
    write_profile_text,
)

__all__ = [
    "CLASSES",
    "KERNELS",
    "LATENCY_ORDER",
    "NpuConfig",
    "PROFILE_DIR",
    "RUNTIME_FOR_CLASS",
    "SCHEMA",
    "SOURCES",
    "Key",
    "Profile",
    "ProfileError",
    "ProfileValidationError",
    "Table",
    "available_profiles",
    "check_profile_text",
    "core_from_cpu",
    "display_path",
    "load_profile",
    "numeric_paths",
    "schema_keys",
    "set_sources",
    "set_table",
    "validate",
    "write_latency",
    "write_profile_text",
]
