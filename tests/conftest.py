import pathlib
import sys

# Test helper modules (scope_scenarios, reference) are imported by bare name.
sys.path.insert(0, str(pathlib.Path(__file__).parent))
