"""The zoo's old address, kept on purpose: its home is nas.export.zoo.

Exports written before nas/ had sub-packages are modules that do `from nas.zoo import register_file` (or, older still,
`create` and `load_entry`), and people's code does `import nas.zoo` to register the zoo with timm. Those files live in
users' zoo folders, out of our reach: this module keeps them working. Importing it imports nas.export.zoo, which
registers the presets and the zoo's entries with timm. New code imports nas.export.zoo.
"""

from nas.export.zoo import *  # noqa: F403  (the public names, for `from nas.zoo import ...` in code written against it)
from nas.export.zoo import create, load_entry, register_file  # noqa: F401  (what every generated module has imported)
