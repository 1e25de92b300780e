"""STAND-IN for ``slicer.ScriptedLoadableModule`` (3D Slicer's scripted-module base classes), for tests only.

Mirrors the constructor behaviour of Slicer 5's base classes that a module relies on: a widget made without a
parent gets a ``qMRMLWidget`` with a vertical layout (``self.layout``), ``resourcePath`` resolves files under
the module's ``Resources`` folder, and ``setup``/``cleanup``/``enter``/``exit`` exist. No reload/test
developer section is added.
"""

import os
import sys

import qt

import slicer

STANDIN = True


class _ModuleParent:
    """Stand-in for the ``qSlicerScriptedLoadableModule`` that Slicer passes as ``parent``."""

    def __init__(self):
        self.title = ""
        self.categories = []
        self.dependencies = []
        self.contributors = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.hidden = False


class ScriptedLoadableModule:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else _ModuleParent()
        self.moduleName = self.__class__.__name__
        self.parent.title = self.moduleName
        self.parent.categories = ["Examples"]
        self.parent.dependencies = []
        self.parent.contributors = []

    def getDefaultModuleDocumentationLink(self, docPage=""):
        return "https://slicer.readthedocs.io"

    def runTest(self, msec=100, **kwargs):
        testCaseName = self.moduleName + "Test"
        module = sys.modules[self.__module__]
        getattr(module, testCaseName)().runTest()


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.moduleName = self.__module__
        self.developerMode = False
        if parent is None:
            self.parent = slicer.qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()

    def resourcePath(self, filename):
        module_dir = os.path.dirname(os.path.abspath(sys.modules[self.__module__].__file__))
        return os.path.join(module_dir, "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def enter(self):
        pass

    def exit(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__[: -len("Logic")] if self.__class__.__name__.endswith("Logic") else ""


class ScriptedLoadableModuleTest:
    def setUp(self):
        pass

    def delayDisplay(self, message, msec=100):
        slicer.util.delayDisplay(message, msec)

    def runTest(self):
        pass
