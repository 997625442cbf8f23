"""The sharing plugin's Falcon resources, one module per family:

- :mod:`.engine_shares`: an owner's shares of their engines (seed paths and the current GUI's
  alias paths), and the engines shared with me;
- :mod:`.workflow_links`: share links to a workflow, and their public resolution.
"""
