"""STAND-IN for 3D Slicer's ``slicer`` Python package, used only by the DinoMix module's tests.

This is NOT 3D Slicer. It offers the few names ``slicer_module/DinoMix/DinoMix.py`` touches while its widget is
built and its buttons are clicked: ``slicer.util`` (``loadUI`` really parses the module's Qt Designer file and
builds stand-in widgets for it, ``childWidgetVariables``, and message boxes that RECORD what would have been
shown), ``slicer.mrmlScene`` (a node list that can add the stand-in nodes of :mod:`slicer.mrml`), ``slicer.app``
and ``slicer.qMRMLWidget``. The MRML stand-in reads volumes with nibabel and keeps segment masks on the reference
volume's grid only (no resampling): enough to run the module's logic against a real server, nothing more.
"""

import qt

from . import mrml, util  # noqa: F401  (``slicer.util`` as in Slicer)

STANDIN = True


class qMRMLWidget(qt.QWidget):
    """Stand-in for Slicer's MRML-aware base widget (``mrmlSceneChanged`` signal, ``setMRMLScene``)."""

    SIGNALS = ("mrmlSceneChanged",)


class _Scene:
    """Stand-in MRML scene: a list of added nodes; ``Clear`` empties it."""

    StartCloseEvent = 66000
    EndCloseEvent = 66001

    def __init__(self):
        self.nodes = []

    def AddNode(self, node):
        self.nodes.append(node)
        return node

    def RemoveNode(self, node):
        if node in self.nodes:
            self.nodes.remove(node)

    def AddNewNodeByClass(self, class_name, name=""):
        if class_name not in mrml.NODE_CLASSES:
            raise NotImplementedError(f"stand-in slicer: no stand-in for MRML class {class_name!r}")
        return self.AddNode(mrml.NODE_CLASSES[class_name](name))

    def Clear(self, *args):
        self.nodes = []


class _App:
    """Stand-in ``slicer.app``."""

    commandOptions = None

    def processEvents(self):
        pass

    def temporaryPath(self):
        import tempfile

        return tempfile.gettempdir()


mrmlScene = _Scene()
app = _App()


class _Modules:
    """Stand-in ``slicer.modules``: attributes are set by tests when needed."""


modules = _Modules()
