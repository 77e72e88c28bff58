"""The automation folder ("automation as code"): YAML files whose top-level keys are merged.

Every ``*.yaml``/``*.yml`` file below the folder is read; each top-level key (``rules``,
``segments``, ``scoring``, ``sequences``, ``sources``, ``forms``, ``endpoints`` ...) is a section,
and a section may be spread over several files. ``templates/`` holds e-mail templates. Each
feature validates its own section into typed models; errors name the file, line and field.
"""

from nurture.automation.loader import Located, Pack, load_pack, resolve_dir

__all__ = ["Located", "Pack", "load_pack", "resolve_dir"]
