/**
 * VQA answer normalisation and scoring, as the official VQA evaluation (GT-Vision-Lab/VQA,
 * `vqaEval.py`) does them: answers are normalised (punctuation, number words, articles,
 * contractions) and a prediction earns `min(#humans who gave it / 3, 1)`.
 */

/** vqaEval.py's contractions table: a word written without its apostrophes gets them back. */
const CONTRACTIONS = new Map<string, string>(Object.entries({
  aint: "ain't", arent: "aren't", cant: "can't", couldve: "could've", couldnt: "couldn't",
  "couldn'tve": "couldn't've", "couldnt've": "couldn't've", didnt: "didn't", doesnt: "doesn't", dont: "don't", hadnt: "hadn't",
  "hadnt've": "hadn't've", "hadn'tve": "hadn't've", hasnt: "hasn't", havent: "haven't", hed: "he'd", "hed've": "he'd've",
  "he'dve": "he'd've", hes: "he's", howd: "how'd", howll: "how'll", hows: "how's", "Id've": "I'd've", "I'dve": "I'd've",
  Im: "I'm", Ive: "I've", isnt: "isn't", itd: "it'd", "itd've": "it'd've", "it'dve": "it'd've", itll: "it'll", "let's": "let's",
  maam: "ma'am", mightnt: "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", mightve: "might've",
  mustnt: "mustn't", mustve: "must've", neednt: "needn't", notve: "not've", oclock: "o'clock", oughtnt: "oughtn't",
  "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", shant: "shan't", "shed've": "she'd've", "she'dve": "she'd've",
  "she's": "she's", shouldve: "should've", shouldnt: "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
  "somebody'd": 'somebodyd', "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", somebodyll: "somebody'll",
  somebodys: "somebody's", someoned: "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
  someonell: "someone'll", someones: "someone's", somethingd: "something'd", "somethingd've": "something'd've",
  "something'dve": "something'd've", somethingll: "something'll", thats: "that's", thered: "there'd", "thered've": "there'd've",
  "there'dve": "there'd've", therere: "there're", theres: "there's", theyd: "they'd", "theyd've": "they'd've",
  "they'dve": "they'd've", theyll: "they'll", theyre: "they're", theyve: "they've", twas: "'twas", wasnt: "wasn't",
  "wed've": "we'd've", "we'dve": "we'd've", weve: "we've", werent: "weren't", whatll: "what'll", whatre: "what're",
  whats: "what's", whatve: "what've", whens: "when's", whered: "where'd", wheres: "where's", whereve: "where've",
  whod: "who'd", "whod've": "who'd've", "who'dve": "who'd've", wholl: "who'll", whos: "who's", whove: "who've", whyll: "why'll",
  whyre: "why're", whys: "why's", wont: "won't", wouldve: "would've", wouldnt: "wouldn't", "wouldnt've": "wouldn't've",
  "wouldn'tve": "wouldn't've", yall: "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
  "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", youd: "you'd", "youd've": "you'd've", "you'dve": "you'd've",
  youll: "you'll", youre: "you're", youve: "you've",
}));

const NUMBER_WORDS = new Map<string, string>([
  ['none', '0'], ['zero', '0'], ['one', '1'], ['two', '2'], ['three', '3'], ['four', '4'],
  ['five', '5'], ['six', '6'], ['seven', '7'], ['eight', '8'], ['nine', '9'], ['ten', '10'],
]);

const ARTICLES = new Set(['a', 'an', 'the']);

const PUNCTUATION = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

// vqaEval.py's `(?!<=\d)` was meant as a lookbehind but is a lookahead that always holds, so the
// rule it applies, and this one with it, is: drop every full stop not followed by a digit.
const PERIOD_STRIP = /(?!<=\d)(\.)(?!\d)/g;
const COMMA_STRIP = /(\d)(,)(\d)/;

/** vqaEval.py's `processPunctuation`. */
function processPunctuation(text: string): string {
  // A mark next to a space, or any mark in a text with a digit-comma-digit, is dropped; otherwise it becomes a space.
  const dropAll = COMMA_STRIP.test(text);
  let out = text;
  for (const mark of PUNCTUATION) {
    const drop = dropAll || text.includes(`${mark} `) || text.includes(` ${mark}`);
    out = out.split(mark).join(drop ? '' : ' ');
  }
  return out.replace(PERIOD_STRIP, '');
}

/** vqaEval.py's `processDigitArticle`. */
function processDigitArticle(text: string): string {
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter((word) => word.length > 0)
    .map((word) => NUMBER_WORDS.get(word) ?? word)
    .filter((word) => !ARTICLES.has(word))
    .map((word) => CONTRACTIONS.get(word) ?? word)
    .join(' ');
}

/**
 * An answer normalised as the official VQA evaluation does: newlines and tabs to spaces, trimmed,
 * punctuation removed (or turned into spaces), lower-cased, number words up to ten written as
 * digits (`two` → `2`), articles removed, and contractions given their apostrophes (`dont` → `don't`).
 * `"Two."` → `"2"`, `"a dog"` → `"dog"`, `"yes."` → `"yes"`.
 */
export function normalizeAnswer(answer: string): string {
  if (typeof answer !== 'string') throw new TypeError(`answer must be a string, got ${typeof answer}`);
  return processDigitArticle(processPunctuation(answer.replace(/[\n\t]/g, ' ').trim()));
}

/** How one prediction scores against the human answers. */
export interface AnswerScore {
  /** VQA soft accuracy: `min(#human answers equal to the prediction / 3, 1)`, after normalisation. */
  vqa: number;
  /**
   * The same, averaged over the subsets that leave one human answer out (the 10 choose 9 subsets
   * of VQAv2's ten answers), as the official evaluation reports it: 3 matching answers of 10
   * score 0.9 here and 1 in {@link AnswerScore.vqa}. With a single human answer there is no subset
   * to leave one out of, and it equals `vqa`.
   */
  vqaAveraged: number;
  /** The normalised prediction equals the most frequent normalised human answer (any of them, on a tie). */
  exact: boolean;
}

/**
 * Scores a prediction against the human answers (see {@link AnswerScore}). Both sides are
 * normalised with {@link normalizeAnswer}. (The official script normalises the human answers only
 * when they disagree, relying on its data being normalised already; hand-made data is not.)
 *
 * @throws TypeError when an answer is not a string; RangeError when there are no human answers.
 */
export function scoreAnswer(prediction: string, answers: readonly string[]): AnswerScore {
  if (!Array.isArray(answers)) throw new TypeError('answers must be an array of strings');
  if (answers.length === 0) throw new RangeError('answers must hold at least one human answer');
  const predicted = normalizeAnswer(prediction);
  const normalized = answers.map(normalizeAnswer);
  const matching = normalized.filter((answer) => answer === predicted).length;
  const soft = (count: number): number => Math.min(count / 3, 1);
  const leaveOneOut = normalized.map((answer) => soft(matching - (answer === predicted ? 1 : 0)));
  const vqaAveraged = answers.length < 2 ? soft(matching) : leaveOneOut.reduce((sum, value) => sum + value, 0) / answers.length;
  return { vqa: soft(matching), vqaAveraged, exact: mostFrequent(normalized).has(predicted) };
}

/** VQA soft accuracy of one prediction: `min(#matching human answers / 3, 1)` (see {@link scoreAnswer}). */
export function vqaSoftAccuracy(prediction: string, answers: readonly string[]): number {
  return scoreAnswer(prediction, answers).vqa;
}

function mostFrequent(values: readonly string[]): Set<string> {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  const top = Math.max(...counts.values());
  return new Set([...counts].filter(([, count]) => count === top).map(([value]) => value));
}
