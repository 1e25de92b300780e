"""STAND-IN for 3D Slicer's ``ctk`` module (CTK widgets), used only by the DinoMix module's tests.

Not CTK: only the widget classes the DinoMix ``.ui`` file names, modelled on the stand-in ``qt`` widgets.
"""

from qt import QAbstractButton, QComboBox, QLineEdit, QWidget

STANDIN = True


class ctkCollapsibleButton(QAbstractButton):
    SIGNALS = ("contentsCollapsed",)

    def __init__(self, parent=None):
        super().__init__("", parent)
        self.collapsed = False
        self.checkable = True
        self.checked = True


class ctkCollapsibleGroupBox(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = ""
        self.collapsed = False


class ctkComboBox(QComboBox):
    pass


class ctkPathLineEdit(QLineEdit):
    def __init__(self, parent=None):
        super().__init__("", parent)
        self.currentPath = ""
