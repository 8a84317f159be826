"""One folder per company file, each with a `defs.yaml` declaring a GestimumSync component.

Empty (the default), the code location syncs the one company file the environment names
(GESTIMUM_URL, GESTIMUM_FICHIER, ...). See docs/company-files.md.
"""
