"""STAND-IN for the ``vtk`` module as 3D Slicer bundles it, used only by the DinoMix module's tests.

Not VTK: only ``vtkMatrix4x4`` (element access) so code that builds one can be imported and exercised.
"""

STANDIN = True


class vtkMatrix4x4:
    def __init__(self):
        self._m = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]

    def GetElement(self, i, j):
        return self._m[i][j]

    def SetElement(self, i, j, value):
        self._m[i][j] = float(value)

    def Identity(self):
        self.__init__()


class vtkStringArray:
    def __init__(self):
        self._values = []

    def InsertNextValue(self, value):
        self._values.append(str(value))

    def GetNumberOfValues(self):
        return len(self._values)

    def GetValue(self, i):
        return self._values[i]
