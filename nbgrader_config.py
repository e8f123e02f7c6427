# nbgrader configuration for the labkit course. Run nbgrader from this folder (the course root):
# notebooks/<lab>/ are the instructor sources, release/<lab>/ the student versions,
# submitted/<student>/<lab>/ the hand-ins, autograded/ and gradebook.db the results.
c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "labkit"
c.CourseDirectory.source_directory = "notebooks"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# Student code runs cell by cell under a timeout; a cell that runs past it is interrupted,
# marked as failed, and grading carries on with the next cell.
c.Execute.timeout = 300            # seconds per cell (QUICK mode cells take a few seconds)
c.Execute.interrupt_on_timeout = True
c.Execute.execute_retries = 0

# Grading runs quick mode whatever the hand-in set (the parameters cell comes from the source)
# and skips the demonstrations the source tags "skip-at-grading" (labkit.grading.FastGrading).
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "labkit.grading.FastGrading",
    "nbgrader.preprocessors.CheckCellMetadata",
]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Feedback for students: never the hidden tests, neither their code nor the tracebacks that quote it.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "nbgrader.preprocessors.ClearHiddenTests",
    "labkit.grading.HideTestTracebacks",
]
