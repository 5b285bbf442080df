/** A sign-in that cannot go on, in words for the person in the browser, with the page's HTTP status. */
export class SignInError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
  ) {
    super(message);
    this.name = 'SignInError';
  }
}
