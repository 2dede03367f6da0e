"""The command line and what only it uses: :mod:`~aestream.commands.cli` (``aestream``), the demo, the plant
simulator, the HTML report, ``embed`` and the SKAB evaluation. The library never imports from here."""
