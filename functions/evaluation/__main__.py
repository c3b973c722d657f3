from common.runtime import serve
from functions.evaluation.app import app

serve(app)
