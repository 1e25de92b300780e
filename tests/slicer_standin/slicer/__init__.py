"""STAND-IN for 3D Slicer's ``slicer`` Python package, used only by the DinoMix module's tests.

This is NOT 3D Slicer. It offers the few names ``slicer_module/DinoMix/DinoMix.py`` touches while its widget is
built and its buttons are clicked: ``slicer.util`` (``loadUI`` really parses the module's Qt Designer file and
builds stand-in widgets for it, ``childWidgetVariables``, and message boxes that RECORD what would have been
shown), ``slicer.mrmlScene`` (a node list that can add the stand-in nodes of :mod:`slicer.mrml`), ``slicer.app``,
``slicer.qMRMLWidget`` and ``slicer.qSlicerMarkupsPlaceWidget`` (holds its point list; a test places points with the
stand-in point list's ``place``, as a click in a view would). The MRML stand-in reads volumes with nibabel and
keeps segment masks on the reference volume's grid only (no resampling): enough to run the module's logic against
a real server, nothing more.
"""

import qt

from . import mrml, util  # noqa: F401  (``slicer.util`` as in Slicer)

STANDIN = True


class qMRMLWidget(qt.QWidget):
    """Stand-in for Slicer's MRML-aware base widget (``mrmlSceneChanged`` signal, ``setMRMLScene``)."""

    SIGNALS = ("mrmlSceneChanged",)


class qSlicerMarkupsPlaceWidget(qt.QWidget):
    """Stand-in for Slicer's point-placement widget: the current point list, its place button, place mode."""

    ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = 1, 2

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node = None
        self._scene = None
        self._placeButton = qt.QPushButton("")
        self._deleteButton = qt.QPushButton("")
        self.buttonsVisible = True
        self.placeModeEnabled = False
        self.placeMultipleMarkups = self.ForcePlaceMultipleMarkups

    def setMRMLScene(self, scene):
        self._scene = scene

    def setCurrentNode(self, node):
        self._node = node

    def currentNode(self):
        return self._node

    def placeButton(self):
        return self._placeButton

    def deleteButton(self):
        return self._deleteButton

    def setPlaceModeEnabled(self, enabled):
        self.placeModeEnabled = bool(enabled) and self._node is not None


vtkMRMLMarkupsNode = mrml.vtkMRMLMarkupsNode


class _Scene:
    """Stand-in MRML scene: a list of added nodes; ``Clear`` empties it."""

    StartCloseEvent = 66000
    EndCloseEvent = 66001

    def __init__(self):
        self.nodes = []

    def AddNode(self, node):
        self.nodes.append(node)
        return node

    def IsNodePresent(self, node):
        return any(n is node for n in self.nodes)

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
