"""The one argument layer of kerasreg: constraint tables, checked once.

Each public class declares one table, ``_parameter_constraints``, mapping
each ``__init__`` argument to the constraint it must satisfy, and each public
function is decorated with ``@validate_params(table)`` (the scikit-learn
pattern). The same table validates ``__init__`` (and therefore
``from_config``) or the call, and lets the test suite generate invalid values
for every argument instead of listing them by hand.

Where things live, one rule: **the tables sit beside the code that uses
them; this package holds only the machinery.** A table is written in the
class body or the ``@validate_params`` of the callable it checks (a table
that several functions of one module share, such as the path functions'
``_PATH_CONSTRAINTS``, is a constant beside them). This package keeps what
every table is built from: `InvalidArgumentError`, `invalid_argument`,
`validate_params` and `Configurable` (`_core.py`), and every `Constraint`
type, also those only one callable uses today, such as `Splits` or
`RegularizerChoice`: on single values (`_values.py`) and on collections,
data and layer selectors (`_data.py`). Import them from here. It
imports nothing else of kerasreg: a constraint that needs another module,
as `RegularizerChoice` needs the regularizer lookup, is given it by the
table (``RegularizerChoice(regularizers.get)``).

Every refusal is an `InvalidArgumentError` (a `ValueError` and a `TypeError`
at once, so callers' existing ``except`` clauses keep working) with one
message shape, naming the argument, what was expected and what was
received::

    Invalid value for argument `l1_ratio`: expected a float in [0, 1].
    Received: l1_ratio=1.5
"""

from kerasreg._validation._core import Configurable
from kerasreg._validation._core import Constraint
from kerasreg._validation._core import InvalidArgumentError
from kerasreg._validation._core import invalid_argument
from kerasreg._validation._core import validate_arguments
from kerasreg._validation._core import validate_params
from kerasreg._validation._data import CalibrationData
from kerasreg._validation._data import DataPair
from kerasreg._validation._data import FitKwargs
from kerasreg._validation._data import LayerSelector
from kerasreg._validation._data import Ratios
from kerasreg._validation._data import RegularizerChoice
from kerasreg._validation._data import Samples
from kerasreg._validation._data import SampleWeights
from kerasreg._validation._data import Sparsities
from kerasreg._validation._data import Splits
from kerasreg._validation._data import Strengths
from kerasreg._validation._data import WeightNames
from kerasreg._validation._values import AnyOf
from kerasreg._validation._values import Axes
from kerasreg._validation._values import Boolean
from kerasreg._validation._values import Callable
from kerasreg._validation._values import Identifier
from kerasreg._validation._values import Indices
from kerasreg._validation._values import InputShape
from kerasreg._validation._values import InstanceOf
from kerasreg._validation._values import Integer
from kerasreg._validation._values import Interval
from kerasreg._validation._values import Options
from kerasreg._validation._values import String
from kerasreg._validation._values import Strings
from kerasreg._validation._values import Structure

__all__ = [
    "AnyOf",
    "Axes",
    "Boolean",
    "CalibrationData",
    "Callable",
    "Configurable",
    "Constraint",
    "DataPair",
    "FitKwargs",
    "Identifier",
    "Indices",
    "InputShape",
    "InstanceOf",
    "Integer",
    "Interval",
    "InvalidArgumentError",
    "LayerSelector",
    "Options",
    "Ratios",
    "RegularizerChoice",
    "SampleWeights",
    "Samples",
    "Sparsities",
    "Splits",
    "Strengths",
    "String",
    "Strings",
    "Structure",
    "WeightNames",
    "invalid_argument",
    "validate_arguments",
    "validate_params",
]
